//! [`SoftwareStore`] on redb — skeleton until the implementation lands.
use super::RedbBackend;
use crate::{Device, DeviceId, OrgId, Page, PageRequest, Result, Scope, SoftwareStore, StoreError};

impl SoftwareStore for RedbBackend {
    fn create_software(
        &self,
        _org: OrgId,
        _app_name: &str,
        _version: semver::Version,
        _fields: crate::SoftwareFields,
    ) -> Result<crate::Software> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn software(
        &self,
        _org: OrgId,
        _app_name: &str,
        _version: &semver::Version,
    ) -> Result<Option<crate::Software>> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn list_software(&self, _org: OrgId, _app_name: &str) -> Result<Vec<crate::Software>> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn update_software(
        &self,
        _id: crate::SoftwareId,
        _fields: crate::SoftwareFields,
    ) -> Result<crate::Software> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn suspend_software(&self, _id: crate::SoftwareId, _note: String) -> Result<()> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn application_organizations(&self, _scope: &Scope, _app_name: &str) -> Result<Vec<OrgId>> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn application(&self, _org: OrgId, _app_name: &str) -> Result<Option<crate::Application>> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn put_application(&self, _application: crate::Application) -> Result<crate::Application> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn create_filter(&self, _fields: crate::FilterFields) -> Result<crate::EndpointFilter> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn filter(&self, _id: crate::FilterId) -> Result<Option<crate::EndpointFilter>> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn list_filters(
        &self,
        _scope: &Scope,
        _page: PageRequest,
    ) -> Result<Page<crate::EndpointFilter>> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn update_filter(
        &self,
        _id: crate::FilterId,
        _fields: crate::FilterFields,
    ) -> Result<crate::EndpointFilter> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn delete_filter(&self, _id: crate::FilterId) -> Result<()> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn filter_endpoints(&self, _id: crate::FilterId, _page: PageRequest) -> Result<Page<Device>> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn device_software(&self, _device: DeviceId) -> Result<Vec<crate::DeviceSoftware>> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn set_device_software(
        &self,
        _device: DeviceId,
        _applications: std::collections::BTreeMap<String, String>,
        _replace: bool,
    ) -> Result<Vec<crate::DeviceSoftware>> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn software_view(&self, _org: OrgId) -> Result<crate::SoftwareView> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn software_organizations(&self) -> Result<Vec<OrgId>> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn start_installations(
        &self,
        _installations: Vec<crate::Installation>,
    ) -> Result<Vec<crate::Installation>> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn write_installations(
        &self,
        _installations: Vec<crate::Installation>,
    ) -> Result<Vec<crate::InstallationId>> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn installation(&self, _id: crate::InstallationId) -> Result<Option<crate::Installation>> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn active_installations(&self) -> Result<Vec<crate::Installation>> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
    fn device_installations(&self, _device: DeviceId) -> Result<Vec<crate::Installation>> {
        Err(StoreError::Task(
            "software store not implemented yet".into(),
        ))
    }
}
